"""Regenerate the example inputs of the semantic-anchors workflows (numpy + Pillow, no downloads).

    python workflows/make_anchor_inputs.py        # writes workflows/inputs/*, two thumbnails

The exemplar is the pack's usual one, ``inputs/midms_exemplar.png`` (skimage's astronaut), with
two keypoint files in OpenPose-JSON format (one frame, canvas 512 x 512, pixels):

* ``midms_exemplar_face_keypoints.json``: her 68 face landmarks, found by dlib's 68-point shape
  predictor once (``python -m benchmarks.face_detectors --astronaut``) and checked by eye;
* ``midms_exemplar_pose_keypoints.json``: her upper-body joints (COCO-18), placed by hand; the
  hips are out of the frame and her left arm is hidden behind the helmet, so those are missing,
  as a detector would leave them.

The conditions are drawn from keypoints of ANOTHER layout:

* ``midms_face_condition.png`` + ``midms_face_condition_keypoints.json``: a face-landmark line
  drawing (the iBUG contours, white on black, as face-landmark ControlNets take) of a different
  face: eyes set wider, mouth wider, jaw broader, nose shorter, the head tilted and drawn as a
  close-up;
* ``midms_pose_condition.png`` + ``midms_pose_condition_keypoints.json``: an OpenPose-style
  skeleton (COCO-18 limbs in the OpenPose colours on black) of a person standing elsewhere, head
  tilted, right arm raised; its left arm is drawn, so one side has points the other lacks
  (anchors pair on the joints both have).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
CANVAS = 512
EXEMPLAR_NAME = "midms_exemplar.png"
EXEMPLAR_FACE_KEYPOINTS = "midms_exemplar_face_keypoints.json"
EXEMPLAR_POSE_KEYPOINTS = "midms_exemplar_pose_keypoints.json"
FACE_CONDITION = "midms_face_condition.png"
FACE_CONDITION_KEYPOINTS = "midms_face_condition_keypoints.json"
POSE_CONDITION = "midms_pose_condition.png"
POSE_CONDITION_KEYPOINTS = "midms_pose_condition_keypoints.json"
WORKFLOWS = {"midms_anchors_face_sd15": (FACE_CONDITION, "face"), "midms_anchors_pose_sd15": (POSE_CONDITION, "pose")}

COCO18 = ("nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
          "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "right_eye", "left_eye",
          "right_ear", "left_ear")
#: the astronaut's upper-body joints (pixels of the 512 px photo), placed by hand; "right" is her
#: right (the image's left). Eyes and nose agree with the dlib face landmarks.
EXEMPLAR_JOINTS = {"nose": (225, 127), "neck": (222, 200), "right_shoulder": (104, 262), "left_shoulder": (334, 258),
                   "right_elbow": (52, 420), "right_wrist": (150, 494), "right_eye": (203, 101),
                   "left_eye": (247, 104), "right_ear": (180, 110), "left_ear": (272, 112)}
#: the condition person's joints: elsewhere, smaller, head tilted, right arm raised, left arm shown
CONDITION_JOINTS = {"nose": (290, 150), "neck": (282, 215), "right_shoulder": (180, 262), "left_shoulder": (382, 258),
                    "right_elbow": (110, 180), "right_wrist": (150, 80), "left_elbow": (420, 380),
                    "left_wrist": (400, 480), "right_eye": (270, 128), "left_eye": (307, 131), "right_ear": (247, 138),
                    "left_ear": (330, 142)}
#: OpenPose's COCO-18 limbs and their colours
LIMBS = (("neck", "right_shoulder"), ("neck", "left_shoulder"), ("right_shoulder", "right_elbow"),
         ("right_elbow", "right_wrist"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
         ("neck", "right_hip"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"), ("neck", "left_hip"),
         ("left_hip", "left_knee"), ("left_knee", "left_ankle"), ("neck", "nose"), ("nose", "right_eye"),
         ("right_eye", "right_ear"), ("nose", "left_eye"), ("left_eye", "left_ear"))
COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
#: iBUG-68 contours: (first, last, closed)
FACE_CONTOURS = ((0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False), (31, 35, False), (36, 41, True),
                 (42, 47, True), (48, 59, True), (60, 67, True))


def frame(part: str, values: list, canvas: int = CANVAS) -> dict:
    """One OpenPose-JSON frame with one person holding ``part`` (flat x, y, c)."""
    return {"people": [{part: values}], "canvas_width": canvas, "canvas_height": canvas}


def body_values(joints: dict) -> list:
    """COCO-18 flat x, y, c; a joint not given is [0, 0, 0] (DWPose's missing point)."""
    out = []
    for name in COCO18:
        x, y = joints.get(name, (0, 0))
        out += [float(x), float(y), 1.0 if name in joints else 0.0]
    return out


def exemplar_face() -> np.ndarray:
    """(68, 2) the astronaut's face landmarks (canvas pixels), from the shipped JSON."""
    data = json.loads((HERE / "inputs" / EXEMPLAR_FACE_KEYPOINTS).read_text())
    return np.asarray(data[0]["people"][0]["face_keypoints_2d"], dtype=np.float64).reshape(68, 3)[:, :2]


def other_face(points: np.ndarray) -> np.ndarray:
    """Another face's landmarks from these: parts moved about the face centre (eyes wider apart,
    mouth wider, jaw broader, nose shorter), then tilted 9 degrees and scaled 2.3 to fill the
    canvas (a face-landmark drawing is usually a close-up)."""
    p = points.copy()
    centre = p.mean(0)

    def widen(idx, factor, about=None):
        about = p[idx].mean(0) if about is None else about
        p[idx, 0] = about[0] + (p[idx, 0] - about[0]) * factor

    eye_r, eye_l = list(range(36, 42)), list(range(42, 48))
    p[eye_r, 0] -= 6
    p[eye_l, 0] += 6
    p[list(range(17, 22)), 0] -= 5
    p[list(range(22, 27)), 0] += 5
    widen(list(range(48, 68)), 1.22)
    widen(list(range(0, 17)), 1.12, centre)
    nose = list(range(27, 36))
    p[nose, 1] = p[27, 1] + (p[nose, 1] - p[27, 1]) * 0.85
    angle, scale, placed = math.radians(9.0), 2.3, np.array([250.0, 262.0])
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return (p - centre) @ rotation.T * scale + placed


def draw_face(points: np.ndarray, size: int) -> Image.Image:
    """The iBUG contours of (68, 2) canvas-pixel landmarks, white on black, at ``size`` px."""
    image = Image.new("RGB", (size, size), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    s = size / CANVAS
    width = max(1, round(3 * s))
    for first, last, closed in FACE_CONTOURS:
        line = [(float(x) * s, float(y) * s) for x, y in points[first : last + 1]]
        draw.line(line + (line[:1] if closed else []), fill=(255, 255, 255), width=width, joint="curve")
    return image


def draw_skeleton(joints: dict, size: int) -> Image.Image:
    """An OpenPose-style skeleton of ``joints`` (canvas pixels) at ``size`` px."""
    image = Image.new("RGB", (size, size), (0, 0, 0))
    draw = ImageDraw.Draw(image)
    s = size / CANVAS
    for k, (a, b) in enumerate(LIMBS):
        if a in joints and b in joints:
            (xa, ya), (xb, yb) = joints[a], joints[b]
            draw.line([(xa * s, ya * s), (xb * s, yb * s)], fill=tuple(c * 6 // 10 for c in COLOURS[k]),
                      width=max(2, round(8 * s)))
    r = max(1, round(5 * s))
    for k, name in enumerate(COCO18):
        if name in joints:
            x, y = joints[name]
            draw.ellipse([x * s - r, y * s - r, x * s + r, y * s + r], fill=COLOURS[k])
    return image


def face_inputs(size: int = CANVAS) -> tuple[Image.Image, dict]:
    """(condition drawing, its keypoints frame)."""
    points = other_face(exemplar_face())
    values = [v for x, y in points for v in (round(float(x), 2), round(float(y), 2), 1.0)]
    return draw_face(points, size), frame("face_keypoints_2d", values)


def pose_inputs(size: int = CANVAS) -> tuple[Image.Image, dict]:
    """(condition skeleton, its keypoints frame)."""
    return draw_skeleton(CONDITION_JOINTS, size), frame("pose_keypoints_2d", body_values(CONDITION_JOINTS))


def write_inputs(out: Path, size: int = CANVAS) -> list[Path]:
    """The condition images at ``size`` px and every keypoints file (canvas 512) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    face, face_frame = face_inputs(size)
    pose, pose_frame = pose_inputs(size)
    for name, image in ((FACE_CONDITION, face), (POSE_CONDITION, pose)):
        image.save(out / name, optimize=True)
        written.append(out / name)
    exemplar_pose = frame("pose_keypoints_2d", body_values(EXEMPLAR_JOINTS))
    for name, value in ((FACE_CONDITION_KEYPOINTS, [face_frame]), (POSE_CONDITION_KEYPOINTS, [pose_frame]),
                        (EXEMPLAR_POSE_KEYPOINTS, [exemplar_pose])):
        (out / name).write_text(json.dumps(value) + "\n")
        written.append(out / name)
    if out.resolve() != (HERE / "inputs").resolve():  # the face landmarks are data, copied as they are
        (out / EXEMPLAR_FACE_KEYPOINTS).write_text((HERE / "inputs" / EXEMPLAR_FACE_KEYPOINTS).read_text())
        written.append(out / EXEMPLAR_FACE_KEYPOINTS)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "inputs")
    parser.add_argument("--no-thumbnails", action="store_true")
    args = parser.parse_args(argv)
    for path in write_inputs(args.out):
        print(f"wrote {path}")
    if not args.no_thumbnails:
        import importlib.util

        spec = importlib.util.spec_from_file_location("midms_make_example_inputs", HERE / "make_example_inputs.py")
        examples = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(examples)
        exemplar = Image.open(HERE / "inputs" / EXEMPLAR_NAME).convert("RGB")
        for workflow, (condition, _) in WORKFLOWS.items():
            if (HERE / f"{workflow}.json").is_file():
                thumb = examples.thumbnail(Image.open(args.out / condition).convert("RGB"), exemplar)
                thumb.save(HERE / f"{workflow}.jpg", quality=85, optimize=True)
                print(f"wrote {HERE / f'{workflow}.jpg'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
