"""The words of the synthetic referring videos: colours, shapes and motion phrases.

Shared by the generator (`glus.data.synth`) and the tiny tokenizer (`glus.model.mllm.tokenizer`, which holds
each of these words as one token); it sits below both, so that the model layer imports nothing from data.
"""

COLOURS = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230),
    "yellow": (230, 210, 40), "purple": (150, 60, 200), "orange": (240, 140, 30),
}
SHAPES = ("circle", "square", "triangle")

MOTION_PHRASES = {
    "left": ("moving left", "going to the left", "that moves leftwards"),
    "right": ("moving right", "going to the right", "that moves rightwards"),
    "up": ("moving up", "going upwards", "that rises"),
    "down": ("moving down", "going downwards", "that falls"),
    "still": ("that stays still", "not moving", "standing still"),
    "speeding": ("speeding up", "that accelerates", "moving faster and faster"),
    "stopping": ("that stops", "moving and then stopping", "that comes to a halt"),
    "entering": ("entering late", "that appears later", "coming into view"),
    "leaving": ("leaving the frame", "that moves out of view", "that disappears"),
}
MOTION_CLASSES = tuple(MOTION_PHRASES)  # the classes of the dense motion target (loss_weights.motion)
# The dense target's classes with labels "object": an object in full, colour x shape x motion (the synthetic
# occluder, a still grey bar, included)
OBJECT_CLASSES = tuple((c, s, m) for c in (*COLOURS, "grey") for s in (*SHAPES, "bar") for m in MOTION_CLASSES)
DENSE_LABELS = {"motion": MOTION_CLASSES, "object": OBJECT_CLASSES}


def dense_class(labels: str, colour: str, shape: str, motion: str) -> int:
    """An object's class index in DENSE_LABELS[labels] ("motion": its motion; "object": all three)."""
    return DENSE_LABELS[labels].index(motion if labels == "motion" else (colour, shape, motion))
PLURAL_MOTION = {
    "left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down",
    "still": "that stay still", "speeding": "speeding up", "stopping": "that stop",
    "entering": "entering late", "leaving": "leaving the frame",
}
