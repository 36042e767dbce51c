"""Build hook only (the metadata is in pyproject.toml): a wheel carries the top-level conf/ and
tags/ folders as package data in qwen_audio_mt/assets/, so an installed copy finds its Hydra
configs and tag vocabulary (qwen_audio_mt.paths). The folders stay at the top of the checkout,
their only copy in git; pyproject.toml's package-dir cannot map them while packages are found
by `find` (it would need every subpackage listed by hand).
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("conf", "tags")


class BuildPyWithAssets(build_py):
    def run(self):
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's folders directly
            return
        for name in SHIPPED:
            for src in sorted(p for p in Path(name).rglob("*") if p.is_file() and "__pycache__" not in p.parts):
                dest = Path(self.build_lib, "qwen_audio_mt", "assets", src)
                self.mkpath(str(dest.parent))
                self.copy_file(str(src), str(dest))


setup(cmdclass={"build_py": BuildPyWithAssets})
