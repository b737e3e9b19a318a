"""Several runs of one config: a comparison of attentions, and attention x seed grids.

    grid.py     the driver: one run per attention (and seed), checked up front, resumed, re-read
    compare.py  `compare_attentions`: which attentions, and the side-by-side table
    ablation.py mean ± std over seeds, tables and band plots (experiments/ablation.py is its command)
"""
