"""Training-free token-reduction methods."""
from vitprune.reduce.base import AttentionStats, TokenReducer
from vitprune.reduce.evit import EViT
from vitprune.reduce.keep_first import KeepFirst
from vitprune.reduce.methods import METHODS, list_methods, make_reducer
from vitprune.reduce.pomt import POMT, pomt_scores
from vitprune.reduce.random_drop import RandomDrop
from vitprune.reduce.tome import ToMe, bipartite_matching, tome_max_remove
from vitprune.reduce.topk import TopK

__all__ = ["AttentionStats", "TokenReducer", "EViT", "KeepFirst", "METHODS", "list_methods",
           "make_reducer", "POMT", "pomt_scores", "RandomDrop", "ToMe", "bipartite_matching",
           "tome_max_remove", "TopK"]
