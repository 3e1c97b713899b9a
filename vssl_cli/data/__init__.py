"""Clip samplers, augmentations and datasets over frame stores."""
