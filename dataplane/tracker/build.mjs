// Builds zori.js (served by zori-ingest, committed) from src/zori.js with the pinned terser.
//   node build.mjs          write zori.js
//   node build.mjs --check  exit 1 if zori.js is not what the build produces
// VERSION is the workspace version in ../../Cargo.toml, i.e. zori-ingest's crate version.
import { readFileSync, writeFileSync } from "node:fs";
import { minify } from "terser";

const here = new URL(".", import.meta.url);
const cargo = readFileSync(new URL("../../Cargo.toml", here), "utf8");
const version = /\[workspace\.package\][^[]*?\bversion\s*=\s*"([^"]+)"/.exec(cargo)?.[1];
if (!version) throw new Error("no [workspace.package] version in ../../Cargo.toml");

const source = readFileSync(new URL("src/zori.js", here), "utf8");
const { code } = await minify(source, {
  ecma: 2022,
  compress: {
    ecma: 2022,
    passes: 3,
    unsafe: true,
    unsafe_arrows: true,
    pure_getters: true,
    global_defs: { VERSION: version },
  },
  mangle: true,
  format: { comments: false },
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
