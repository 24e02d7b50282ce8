"""Config overrides that shrink the quickstart to test size (2 short epochs, tiny nets)."""
TINY = [
    "data.height", "64", "data.width", "32", "data.workers", "0",
    "train.batch_size", "16", "train.max_epoch", "2", "train.print_freq", "1000",
    "test.batch_size", "64", "use_gpu", "false",
    "privacy.enabled", "true", "privacy.generator.ngf", "8", "privacy.decoder.ngf", "8",
    "privacy.discriminator.ndf", "8", "privacy.val_period", "1", "privacy.warmup_epochs", "0",
    "privacy.tensorboard_views", "false",
]
