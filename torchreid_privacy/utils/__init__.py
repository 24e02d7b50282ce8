"""Utilities every layer may use: atomic writes, checkpoint and weight files, mixed precision,
torch.distributed helpers and the three image spaces (torchreid-normalized, [0,1], GAN [-1,1])."""
