"""UNet2DModel configurations shared by the peer benchmarks (diffusers' names and layout)."""

# "small": 1 channel 32x32, three levels (32, 16, 8), attention only at 8x8 and in the mid
# block, 8 GroupNorm groups, one attention head. 1,112,801 parameters.
SMALL = dict(
    sample_size=32,
    in_channels=1,
    out_channels=1,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
    attention_head_dim=None,
)

# google/ddpm-cifar10-32's configuration. 35,746,307 parameters.
CIFAR10 = dict(
    sample_size=32,
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 256, 256),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=None,
    norm_num_groups=32,
    norm_eps=1e-6,
    flip_sin_to_cos=False,
    freq_shift=1,
    downsample_padding=0,
    dropout=0.1,
)

PRESETS = {"small": SMALL, "ddpm-cifar10": CIFAR10}
