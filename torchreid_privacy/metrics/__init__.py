"""How runs are scored: rank metrics (CMC, mAP, mINP), image metrics (PSNR, SSIM), the four
query->gallery settings, and the distance/top-k helpers that ``search`` and the views share."""
