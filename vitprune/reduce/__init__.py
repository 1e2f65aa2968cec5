"""Training-free token-reduction methods."""
from vitprune.reduce.base import AttentionStats, TokenReducer
from vitprune.reduce.evit import EViT
from vitprune.reduce.methods import METHODS, list_methods, make_reducer
from vitprune.reduce.pomt import POMT, pomt_scores
from vitprune.reduce.random_drop import RandomDrop
from vitprune.reduce.tome import ToMe, bipartite_matching
from vitprune.reduce.topk import TopK

__all__ = ["AttentionStats", "TokenReducer", "EViT", "METHODS", "list_methods", "make_reducer",
           "POMT", "pomt_scores", "RandomDrop", "ToMe", "bipartite_matching", "TopK"]
