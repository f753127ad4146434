"""Facts about model families the training core and the pre-flight check share (no torch)."""

# Image families without attention: LoRA's default (attention projection) targets do not
# exist there; a user must name train.lora.target_modules.
NO_ATTENTION = frozenset({"resnet", "convnext", "convnextv2", "regnet", "mobilenet_v2"})
# Image model families (config.json model_type): what the base-model check calls an image
# model when its config lacks `num_channels`.
VISION = frozenset({"resnet", "vit", "deit", "convnext", "convnextv2", "efficientnet", "regnet",
                    "mobilenet_v2", "swin", "beit", "dinov2"})
