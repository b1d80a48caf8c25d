"""The torch plumbing, knowing no CAM method and no writer: forward hooks (`hooks`, `capture`), which layers
to look at (`layers`, and `default_layer`: the rule behind `target_layer=None`), how a layer's output is seen
as a (N, C, h, w) map (`spatial`), where a detector's layers see the input (`detector_canvas`), and leaving
the model as it was (`safety`)."""
