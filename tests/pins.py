"""What requirements*.txt give one Python version on one machine (their markers evaluated)."""
import os

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pins_for(python_version, machine, files=("requirements.txt",)):
    """{package: specifier, e.g. "==2.0.3"} of the lines of `files` that apply; their
    `-r` includes are not followed (name every file)."""
    environment = {"python_version": python_version, "platform_machine": machine}
    pins = {}
    for name in files:
        with open(os.path.join(ROOT, name)) as handle:
            for line in handle:
                line = line.split("#")[0].strip()
                if line and not line.startswith("-"):
                    requirement = Requirement(line)
                    if requirement.marker is None or requirement.marker.evaluate(environment):
                        pins[canonicalize_name(requirement.name)] = str(requirement.specifier)
    return pins
