"""Training-free token-reduction methods."""
from vitprune.reduce.base import AttentionStats, TokenReducer
