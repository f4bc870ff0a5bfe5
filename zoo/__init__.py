"""The zoo: methods, nets, diffusion math and the training entry point."""
