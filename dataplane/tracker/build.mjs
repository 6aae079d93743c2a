// Builds zori.js (served by zori-ingest, committed) from src/zori.js with the pinned esbuild.
//   node build.mjs          write zori.js
//   node build.mjs --check  exit 1 if zori.js is not what the build produces
// The version is the workspace version in ../../Cargo.toml, i.e. zori-ingest's crate version.
import { readFileSync, writeFileSync } from "node:fs";
import { transform } from "esbuild";

const here = new URL(".", import.meta.url);
const cargo = readFileSync(new URL("../../Cargo.toml", here), "utf8");
const version = /\[workspace\.package\][^[]*?\bversion\s*=\s*"([^"]+)"/.exec(cargo)?.[1];
if (!version) throw new Error("no [workspace.package] version in Cargo.toml");

const source = readFileSync(new URL("src/zori.js", here), "utf8");
const { code } = await transform(source, {
  minify: true,
  target: "es2022",
  legalComments: "none",
  banner: `/*! zori.js ${version} Apache-2.0 */`,
  define: { VERSION: JSON.stringify(version) },
});

const out = new URL("zori.js", here);
if (process.argv.includes("--check")) {
  if (readFileSync(out, "utf8") !== code) {
    console.error("dataplane/tracker/zori.js is stale: run `npm run build` in dataplane/tracker");
    process.exit(1);
  }
  console.log(`zori.js is up to date (${version}, ${code.length} bytes)`);
} else {
  writeFileSync(out, code);
  console.log(`wrote zori.js (${version}, ${code.length} bytes)`);
}
