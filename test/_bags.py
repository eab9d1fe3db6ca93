"""Small rosbag2 inputs shared by the bag tests: numbered pairs, raw or as image_transport's PNG ``compressed``."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def png_message(array: np.ndarray, stamp: int, frame_id: str) -> bytes:
    """CDR bytes of a PNG sensor_msgs/CompressedImage, as image_transport's ``compressed`` publishes it."""
    import io

    from PIL import Image

    from fusion_ros.bag import COMPRESSED_MSGTYPE, image_message, typestore

    png = io.BytesIO()
    Image.fromarray(array).save(png, "PNG")
    msg = typestore().types[COMPRESSED_MSGTYPE](header=image_message(array, stamp, frame_id).header, format="png",
                                                 data=np.frombuffer(png.getvalue(), np.uint8))
    return bytes(typestore().serialize_cdr(msg, COMPRESSED_MSGTYPE))


def numbered_bag(path: Path, count: int, compressed: str = "") -> list[tuple[np.ndarray, np.ndarray]]:
    """A bag of ``count`` small thermal/RGB pairs 0.1 s apart, pair i filled with i; the ``compressed``
    stream ("thermal" or "rgb") as PNG CompressedImage on ``/<stream>/image_raw/compressed``. Returns the pairs."""
    from fusion_ros.bag import COMPRESSED_MSGTYPE, IMAGE_MSGTYPE, BagMessage, serialize_image, write_bag

    pairs, messages = [], []
    for i in range(count):
        stamp = 1_700_000_000_000_000_000 + i * 100_000_000
        pair = (np.full((48, 64), i, np.uint8), np.full((80, 96, 3), (i, 2 * i, 3 * i), np.uint8))
        for stream, array, at in (("thermal", pair[0], stamp), ("rgb", pair[1], stamp + 1000)):
            if stream == compressed:
                messages.append(BagMessage(f"/{stream}/image_raw/compressed", COMPRESSED_MSGTYPE, at, png_message(array, at, stream)))
            else:
                messages.append(BagMessage(f"/{stream}/image_raw", IMAGE_MSGTYPE, at, serialize_image(array, at, stream)))
        pairs.append(pair)
    write_bag(path, messages)
    return pairs
