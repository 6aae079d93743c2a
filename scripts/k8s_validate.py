#!/usr/bin/env python3
"""`kubernetes-validate --strict`, with custom resources known from their CRDs.

    .venv/bin/python scripts/k8s_validate.py [-k VERSION]... [--crd CRD.yaml]... FILE...

Every document of every FILE is validated strictly (unknown fields are errors) for each
Kubernetes VERSION (default: kubernetes-validate's newest). Built-in kinds go through
kubernetes-validate itself (`kubernetes_validate.utils.validate`, the function behind its CLI).
Kinds defined by a `--crd` file are validated against that CRD's openAPIV3Schema, turned into
the same strict JSON schema form kubernetes-validate uses for built-in kinds (2020-12 draft,
`additionalProperties: false` wherever properties are listed, `nullable`, int-or-string and
preserve-unknown-fields honoured, `metadata` checked as an ObjectMeta, apiVersion and kind
fixed). CEL rules (x-kubernetes-validations) are not evaluated.

Prints one line per document and version (`INFO … passed …` or `ERROR …`); a kind with no
schema is an error here, not a warning. Exits 1 if anything failed.
"""
import argparse
import sys

import jsonschema
import yaml
from kubernetes_validate import utils
from referencing import Registry, Resource


def strict(schema):
    """A CRD structural schema as a strict JSON schema."""
    schema = dict(schema)
    nullable = schema.pop("nullable", False)
    preserve = schema.pop("x-kubernetes-preserve-unknown-fields", False)
    if schema.pop("x-kubernetes-int-or-string", False) and "anyOf" not in schema:
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    for key in [k for k in schema if k.startswith("x-kubernetes-")]:
        schema.pop(key)
    if "properties" in schema:
        schema["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if not preserve:
            schema.setdefault("additionalProperties", False)
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict(schema["additionalProperties"])
    if isinstance(schema.get("items"), dict):
        schema["items"] = strict(schema["items"])
    for combinator in ("anyOf", "allOf", "oneOf"):
        if combinator in schema:
            schema[combinator] = [strict(s) for s in schema[combinator]]
    if "not" in schema:
        schema["not"] = strict(schema["not"])
    if nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def crd_schemas(paths):
    """{(apiVersion, kind): JSON schema} of every version of every CRD in `paths`."""
    schemas = {}
    for path in paths:
        with open(path) as f:
            for crd in yaml.safe_load_all(f):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
                for version in crd["spec"]["versions"]:
                    api_version = f"{group}/{version['name']}"
                    schema = strict(version["schema"]["openAPIV3Schema"])
                    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
                    schema["$id"] = f"https://kubernetes.io/api/{kind.lower()}/{api_version}"
                    properties = schema.setdefault("properties", {})
                    properties["apiVersion"] = {"type": "string", "enum": [api_version]}
                    properties["kind"] = {"type": "string", "enum": [kind]}
                    properties["metadata"] = {
                        "$ref": "/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
                    }
                    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
                    schemas[(api_version, kind)] = schema
    return schemas


def validate_custom(doc, schema, version):
    """Validates against a CRD schema, with the version's ObjectMeta; returns the version used."""
    resolved = [v for v in utils.all_versions() if utils.major_minor(v) <= utils.major_minor(version)][-1]
    definitions = utils.schema_contents(
        f"kubernetes-json-schema/v{resolved}-local-strict/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    errors = sorted(jsonschema.Draft202012Validator(schema, registry=registry).iter_errors(doc),
                    key=lambda e: list(e.absolute_path))
    return utils.major_minor(resolved), errors


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", "--kubernetes-version", action="append", dest="versions")
    parser.add_argument("--crd", action="append", default=[])
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    versions = args.versions or [utils.latest_version()]
    custom = crd_schemas(args.crd)
    failed = False
    for path in args.files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if not docs:
            print(f"ERROR {path} holds no Kubernetes object")
            failed = True
        for doc in docs:
            name = f"{str(doc.get('kind')).lower()}/{doc.get('metadata', {}).get('name')}"
            key = (doc.get("apiVersion"), doc.get("kind"))
            for version in versions:
                if key in custom:
                    used, errors = validate_custom(doc, custom[key], version)
                    for error in errors:
                        where = ".".join(str(p) for p in error.absolute_path) or "(root)"
                        print(f"ERROR {path} {name} {where}: {error.message} (version {used}, from the CRD)")
                    if errors:
                        failed = True
                    else:
                        print(f"INFO {path} passed for resource {name} against version {used} (from the CRD)")
                    continue
                try:
                    used = utils.validate(doc, version, strict=True)
                    print(f"INFO {path} passed for resource {name} against version {used}")
                except utils.ValidationError as error:
                    where = ".".join(str(p) for p in error.path) or "(root)"
                    print(f"ERROR {path} {name} {where}: {error.message} (version {error.version})")
                    failed = True
                except (utils.SchemaNotFoundError, utils.VersionNotSupportedError) as error:
                    print(f"ERROR {path} {name}: {error.message}")
                    failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
