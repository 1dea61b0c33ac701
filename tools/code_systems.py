"""Regenerate guideline/validation/data/hl7-code-systems.txt from HAPI's R4 validation resources jar."""

from __future__ import annotations

import argparse
import re
import sys
import zipfile
from pathlib import Path

JAR = "ca/uhn/hapi/fhir/hapi-fhir-validation-resources-r4/8.8.0/hapi-fhir-validation-resources-r4-8.8.0.jar"
MEMBERS = ("valuesets.xml", "v3-codesystems.xml", "v2-tables.xml")
OUT = Path(__file__).resolve().parent.parent / "guideline" / "validation" / "data" / "hl7-code-systems.txt"
HEADER = (
    "# CodeSystem urls of FHIR R4 4.0.1 core and the HL7 terminology it ships (valuesets.xml, v3-codesystems.xml,\n"
    "# v2-tables.xml of ca.uhn.hapi.fhir:hapi-fhir-validation-resources-r4:8.8.0 on Maven Central); regenerate with\n"
    "# tools/code_systems.py. One URI a line.\n"
)


def code_system_urls(jar: Path) -> list[str]:
    """The url of every CodeSystem in the jar's R4 terminology bundles, sorted."""
    urls: set[str] = set()
    with zipfile.ZipFile(jar) as z:
        for name in MEMBERS:
            xml = z.read(f"org/hl7/fhir/r4/model/valueset/{name}").decode("utf-8")
            for m in re.finditer(r'<CodeSystem xmlns="http://hl7.org/fhir">(.*?)</CodeSystem>', xml, re.S):
                url = re.search(r'<url value="([^"]+)"', m.group(1))
                if url:
                    urls.add(url.group(1))
    return sorted(urls)


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) the list; exit 1 when --check finds a difference."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--m2", type=Path, default=Path.home() / ".m2" / "repository")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed list differs")
    args = parser.parse_args(argv)
    text = HEADER + "".join(f"{u}\n" for u in code_system_urls(args.m2 / JAR))
    if args.check:
        return 0 if OUT.read_text(encoding="utf-8") == text else 1
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
