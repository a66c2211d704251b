"""Training of DNPU networks: losses, metrics and trainers (``inmaterio.training.gd``: gradient descent)."""
