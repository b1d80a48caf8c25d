"""The writer's side of each series kind, mirroring `tensorboard_plugin_cam.format`:
`cam` (add_cam, add_cam_maps), `activations` (add_activations), `model`
(add_model_summary), and `sample`, which adds one step of any kind to the
event file (shared pictures stored once)."""
