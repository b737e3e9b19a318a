"""pfca-jax: Parameter-Free Channel Attention in JAX/Flax."""
