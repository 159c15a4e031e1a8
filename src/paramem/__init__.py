"""paramem: a parametric memory of one user's past conversations, learned into a LoRA adapter."""

__version__ = "0.1.0"
