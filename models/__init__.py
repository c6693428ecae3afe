"""The networks augmentation sets are compared on: the small CNN (the default), ResNet-20, Keras'
applications and the user's own (models.networks)."""

from augcompare.models.cnn import small_cnn, small_cnn_parameters, training_flops

__all__ = ["small_cnn", "small_cnn_parameters", "training_flops"]
