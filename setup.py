"""ament_python package: `colcon build` in a ROS 2 workspace, or `pip install .` in a venv."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "fusion_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Thermal + RGB image fusion for ROS 2: visible-style fused images for unchanged RGB detectors",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/weights", ["weights/manifest.toml", "weights/README.md"]),
        # pip puts console scripts in bin/; launch_ros.actions.Node looks in lib/<package>/.
        (f"lib/{PACKAGE}", glob("resource/lib/*")),
    ],
    install_requires=["numpy", "opencv-python-headless", "scipy", "pillow", "PyYAML", "tqdm", "safetensors", "torch", "rosbags", "matplotlib"],
    extras_require={"fusioninv": ["diffusers", "transformers"], "ui": ["streamlit"]},
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "fusion-ros = fusion_ros.cli:main",
            "fusion_node = fusion_ros.ros.node:main",
        ],
    },
)
