"""The small CNN that augmentation sets are compared on."""

from augcompare.models.cnn import small_cnn, training_flops

__all__ = ["small_cnn", "training_flops"]
