"""Model sizes shared by tests."""

# A second architecture with other sizes than the tiny preset: odd head count, shared expert
# wider than the routed experts, MoE in the first and last layer, top-3 of 5 experts.
ODD_SIZES = {"hidden_size": 72, "num_hidden_layers": 5, "num_attention_heads": 5, "head_dim": 18,
             "share_q_dim": 34, "intermediate_size": 100, "moe_num_experts": 5, "moe_top_k": 3,
             "moe_intermediate_size": 28, "share_expert_dim": 44, "moe_layers_enum": "0,2,4",
             "vocab_size": 263}
