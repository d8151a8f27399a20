"""Host-free maths and compute (never imports ComfyUI)."""
