"""Plain-torch architectures (torchvision does not install beside torch 2.13 here)."""
