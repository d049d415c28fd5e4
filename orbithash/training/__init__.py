"""Training hashing networks.

``config`` (torch-free: what a run is), ``loop`` (the one training loop) with ``checkpoint``,
``features`` + ``cache`` (what is derived from images once), and the trainers that supply what
differs: ``finetune`` (the pretrained backbone on cached activations) and ``scratch`` (the
papers' networks on decoded pixels); ``result`` scores and exports what they return.
"""
