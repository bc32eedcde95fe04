import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

export default defineConfig({
  resolve: {
    // Outside VS Code there is no `vscode` module: tests get a small recording fake.
    alias: { vscode: fileURLToPath(new URL("./test/fakes/vscode.ts", import.meta.url)) },
  },
  test: {
    include: ["test/**/*.test.ts"],
    environment: "node",
  },
});
