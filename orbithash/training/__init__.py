"""Training hashing networks: configs, the fine-tuning trainer on cached activations, the
from-scratch trainer for the papers' networks."""
