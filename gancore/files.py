"""The names of the files in a weights folder and in a training run folder, in one place.

weights/NAME/                       runs/NAME/
    config.json      CONFIG_FILE        recipe.json       RECIPE_FILE
    generator.safetensors               metrics.jsonl     METRICS_FILE
    classifier.safetensors              checkpoints/      CHECKPOINT_DIR
    card.md, card_notes.md              samples/          SAMPLES_DIR
    samples.png, interpolation.png,     tensorboard/      TENSORBOARD_DIR
    nearest_neighbours.png, curves.png  vae.json          VAE_CONFIG_FILE (VAE runs)
"""

# weights folder
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "generator.safetensors"
CLASSIFIER_WEIGHTS_FILE = "classifier.safetensors"
CARD_FILE = "card.md"
NOTES_FILE = "card_notes.md"
SAMPLES_FILE = "samples.png"
INTERPOLATION_FILE = "interpolation.png"
NEIGHBOURS_FILE = "nearest_neighbours.png"
CURVES_FILE = "curves.png"

# run folder
RECIPE_FILE = "recipe.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"
SAMPLES_DIR = "samples"
TENSORBOARD_DIR = "tensorboard"
VAE_CONFIG_FILE = "vae.json"
