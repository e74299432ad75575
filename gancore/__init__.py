"""The small core that training and the service share: network families behind one registry,
the weights format, labels, latent sampling, image conversion, devices, atomic file I/O and the
names of the files in a run folder and a weights folder.

Depends on torch, safetensors, numpy and pillow only; never imports `training` or `service`.
"""
