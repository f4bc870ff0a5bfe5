"""Training infrastructure the zoo's runs use and other projects can too: EMA that starts at step 0 in short
runs, a checkpoint refused when weights are not finite, every rank's RNG state in checkpoints (exact
resume), and files written atomically and verified by the SHA-256 of their tensors."""
