"""vLLM: the generative and pooling backends, engine settings, its import and the zygote.
"""
