"""Flax models: ViT (vit.py), BERT (bert.py), image/text towers and TwoTower (two_tower.py).

Pure modules only: no file loading, logging or losses here (see phenolip_jax.convert and losses.py).
"""
from phenolip_jax.models.bert import BERT
from phenolip_jax.models.two_tower import ImageTower, TextTower, TwoTower
from phenolip_jax.models.vit import ViT

__all__ = ["BERT", "ImageTower", "TextTower", "TwoTower", "ViT"]
