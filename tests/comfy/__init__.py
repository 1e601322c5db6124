"""Tests that run a real ComfyUI host with this pack in custom_nodes/ (see README.md here)."""
