"""Shared parts every model composes: autoencoder, AR backbone, denoiser, sampling, text encoders."""
