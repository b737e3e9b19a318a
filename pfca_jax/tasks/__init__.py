"""The two tasks the trainer runs: what a batch, a loss and an evaluation are for each.

    base.py              what the trainer asks of a task, and the data and model every task shares
    classification.py    top-1/top-5 over every example (padded, masked last batch)
    super_resolution.py  L1 training; PSNR/SSIM evaluation on whole images, sample panels
    losses.py            cross-entropy with top-1, L1 (free of TensorFlow)
    tiling.py            super-resolving any image size: the body whole, the tail in fixed-shape tiles
"""
