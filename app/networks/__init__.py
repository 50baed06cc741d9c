"""Network registry: the single table of networks that bundles and the CLI name."""

from app.networks.freeze import encoder_parameter_names, freeze_encoder
from app.networks.registry import NETWORKS, checked_roi_size, create_network, to_device

__all__ = ["NETWORKS", "checked_roi_size", "create_network", "encoder_parameter_names", "freeze_encoder", "to_device"]
