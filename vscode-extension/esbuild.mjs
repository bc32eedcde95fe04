// Bundles the extension and vscode-languageclient into one file, so the .vsix needs no
// node_modules (`vsce package --no-dependencies`) and packaging works offline.
import { build } from "esbuild";

await build({
  entryPoints: ["src/extension.ts"],
  outfile: "dist/extension.js",
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node20", // VS Code 1.91+ and code-server 4.100 run extensions on Node 20
  external: ["vscode"], // provided by VS Code at run time
  minify: true,
  sourcemap: false,
  logLevel: "warning",
});
