"""Step-3's vision path: config, image decoding and limits, the released image processing (global
view, windows, placeholder tokens), and the vision tower's checkpoint layout and loading.

The tower itself (plain `nn.Module`s) is `step3_trt.model.vision`.
"""
