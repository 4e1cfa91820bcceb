/**
 * The folders' import graph, read from the sources: imports run one way (families → layers →
 * actors → collectives → gpu), no two folders import each other, and actors/ knows no model.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);
const SKIPPED = new Set(["node_modules", "tests", ".git", ".ci", "docs", "assets", "scripts"]);
// `import … from "x"`, `export … from "x"`, `import("x")` and side-effect `import "x"`.
const SPECIFIER = /(?:\bfrom\s*|\bimport\s*\(\s*|^\s*import\s+)["'](\.{1,2}\/[^"']+)["']/gm;

/** Folder → the folders its modules import (relative specifiers only). */
const folderGraph = (): Map<string, Set<string>> => {
  const graph = new Map<string, Set<string>>();
  const walk = (dir: URL, folder: string) => {
    for (const entry of Deno.readDirSync(dir)) {
      const url = new URL(entry.name + (entry.isDirectory ? "/" : ""), dir);
      if (entry.isDirectory) walk(url, folder);
      else if (entry.name.endsWith(".ts")) {
        const source = Deno.readTextFileSync(url);
        for (const [, specifier] of source.matchAll(SPECIFIER)) {
          const target = new URL(specifier, url).href.slice(ROOT.href.length).split("/");
          const to = target.length > 1 ? target[0] : "(root)";
          if (to !== folder) graph.get(folder)!.add(to);
        }
      }
    }
  };
  for (const entry of Deno.readDirSync(ROOT)) {
    if (!entry.isDirectory || SKIPPED.has(entry.name) || entry.name.startsWith(".")) continue;
    graph.set(entry.name, new Set());
    walk(new URL(entry.name + "/", ROOT), entry.name);
  }
  return graph;
};

/** A cycle of the graph as a path (first = last), or undefined. */
const findCycle = (graph: Map<string, Set<string>>): string[] | undefined => {
  const state = new Map<string, "open" | "done">();
  const path: string[] = [];
  const visit = (node: string): string[] | undefined => {
    if (state.get(node) === "done") return undefined;
    if (state.get(node) === "open") return [...path.slice(path.indexOf(node)), node];
    state.set(node, "open");
    path.push(node);
    for (const next of graph.get(node) ?? []) {
      const cycle = visit(next);
      if (cycle) return cycle;
    }
    path.pop();
    state.set(node, "done");
    return undefined;
  };
  for (const node of graph.keys()) {
    const cycle = visit(node);
    if (cycle) return cycle;
  }
  return undefined;
};

Deno.test("imports: the graph is read from the sources (ranks/ composes actors/, layers/, models/)", () => {
  const graph = folderGraph();
  for (const folder of ["actors", "layers", "models"]) {
    assert.ok(graph.get("ranks")?.has(folder), `ranks/ imports ${folder}/`);
  }
  assert.ok(graph.get("kernels")?.has("gpu"), "kernels/ imports gpu/");
});

Deno.test("imports: no two folders import each other, and the folders form no cycle", () => {
  const graph = folderGraph();
  const mutual = [...graph].flatMap(([from, tos]) =>
    [...tos].filter((to) => from < to && graph.get(to)?.has(from)).map((to) => `${from} ⇄ ${to}`)
  );
  assert.deepEqual(mutual, []);
  assert.equal(findCycle(graph)?.join(" → "), undefined);
});

Deno.test("imports: run one way, families → layers → actors → collectives → gpu", () => {
  const graph = folderGraph();
  const order = ["models", "layers", "actors", "collectives", "gpu"];
  for (const [i, folder] of order.entries()) {
    const upstream = order.slice(0, i).filter((above) => graph.get(folder)?.has(above));
    assert.deepEqual(upstream, [], `${folder}/ must not import ${upstream.join(", ")}`);
  }
  const actorsKnows = [...graph.get("actors") ?? []];
  for (const apart of ["models", "layers", "ranks", "engine", "serve", "kernels"]) {
    assert.ok(!actorsKnows.includes(apart), `actors/ imports ${apart}/`);
  }
});
