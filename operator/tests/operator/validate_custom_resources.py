#!/usr/bin/env python3
"""Validates custom resources against the openAPIV3Schema of their CRD, strictly.

kubernetes-validate knows only the built-in kinds, so objects of a CRD's kind are checked here
with jsonschema (a dependency of kubernetes-validate): the structural schema is turned into a
JSON schema (nullable, int-or-string), unknown fields are rejected (additionalProperties: false
wherever the schema lists properties), and apiVersion, kind and metadata are checked as the API
server adds them. CEL rules (x-kubernetes-validations) are not evaluated here; the operator's
config validation checks the same rules and is unit-tested.

Usage: validate_custom_resources.py CRD.yaml RESOURCE.yaml...
Prints one line per resource; exits 1 if any fails.
"""
import sys

import jsonschema
import yaml


def to_json_schema(schema):
    schema = dict(schema)
    nullable = schema.pop("nullable", False)
    for key in list(schema):
        if key.startswith("x-kubernetes-"):
            schema.pop(key)
    if "properties" in schema:
        schema["properties"] = {k: to_json_schema(v) for k, v in schema["properties"].items()}
        schema.setdefault("additionalProperties", False)
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = to_json_schema(schema["additionalProperties"])
    if "items" in schema:
        schema["items"] = to_json_schema(schema["items"])
    for combinator in ("anyOf", "allOf", "oneOf"):
        if combinator in schema:
            schema[combinator] = [to_json_schema(s) for s in schema[combinator]]
    if nullable:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def main():
    crd_file, *resources = sys.argv[1:]
    with open(crd_file) as f:
        crd = yaml.safe_load(f)
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    schemas = {}
    for version in crd["spec"]["versions"]:
        schema = to_json_schema(version["schema"]["openAPIV3Schema"])
        schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
        schema["properties"]["kind"] = {"const": kind}
        schema["properties"]["metadata"] = {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "maxLength": 253}},
        }
        schemas[f"{group}/{version['name']}"] = schema
    failed = False
    for path in resources:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc:
                    continue
                name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
                schema = schemas.get(doc.get("apiVersion"))
                if doc.get("kind") != kind or schema is None:
                    print(f"ERROR {path}: {name} is not a {kind} of {group}")
                    failed = True
                    continue
                errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path))
                if errors:
                    failed = True
                    for e in errors:
                        where = ".".join(str(p) for p in e.path)
                        print(f"ERROR {path}: {name}: {where}: {e.message}")
                else:
                    print(f"OK {path}: {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
