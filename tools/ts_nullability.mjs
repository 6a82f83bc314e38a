// Reads the TypeScript declarations of the npm `stripe` package with the TypeScript
// compiler and prints, as JSON on stdout, every interface they declare: for each
// property, whether it may be left out (`field?: T`), whether it may be null
// (`T | null`), and which interfaces its type refers to (through unions, arrays,
// ApiList<T>, type aliases and index signatures), so that tools/gen_ts_nullability.py
// can match the interfaces to the Python SDK's classes by following fields.
//
// Usage: node tools/ts_nullability.mjs PACKAGE_DIR
// (PACKAGE_DIR is node_modules/stripe; the compiler is resolved next to it.)

import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';

const pkgDir = path.resolve(process.argv[2] ?? 'tools/ts-stripe/node_modules/stripe');
const require = createRequire(path.join(pkgDir, '..', '..', 'package.json'));
const ts = require('typescript');

const typesDir = path.join(pkgDir, 'cjs');

function dtsFiles(dir) {
  const out = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...dtsFiles(p));
    else if (entry.name.endsWith('.d.ts')) out.push(p);
  }
  return out.sort();
}

const files = dtsFiles(typesDir);
const program = ts.createProgram(files, {
  noEmit: true,
  skipLibCheck: true,
  types: [],
  target: ts.ScriptTarget.ES2022,
  module: ts.ModuleKind.NodeNext,
  moduleResolution: ts.ModuleResolutionKind.NodeNext,
});
const checker = program.getTypeChecker();

const ids = new Map(); // interface declaration node -> id
function interfaceId(decl) {
  let id = ids.get(decl);
  if (id) return id;
  const names = [decl.name.text];
  for (let n = decl.parent; n && !ts.isSourceFile(n); n = n.parent) {
    if (ts.isModuleDeclaration(n)) names.unshift(n.name.text);
  }
  const rel = path.relative(typesDir, decl.getSourceFile().fileName).replace(/\\/g, '/');
  id = `${rel.replace(/\.d\.ts$/, '')}#${names.join('.')}`;
  ids.set(decl, id);
  return id;
}

function resolveSymbol(sym) {
  if (sym && sym.flags & ts.SymbolFlags.Alias) return checker.getAliasedSymbol(sym);
  return sym;
}

// Walks a property's type node: is `null` among its members, which interfaces it names.
function analyse(node, acc, seen) {
  if (!node) return acc;
  switch (node.kind) {
    case ts.SyntaxKind.UnionType:
    case ts.SyntaxKind.IntersectionType:
      for (const t of node.types) analyse(t, acc, seen);
      return acc;
    case ts.SyntaxKind.ParenthesizedType:
      return analyse(node.type, acc, seen);
    case ts.SyntaxKind.ArrayType:
      return analyse(node.elementType, acc, seen);
    case ts.SyntaxKind.LiteralType:
      if (node.literal.kind === ts.SyntaxKind.NullKeyword) acc.nullable = true;
      return acc;
    case ts.SyntaxKind.NullKeyword:
      acc.nullable = true;
      return acc;
    case ts.SyntaxKind.TypeLiteral:
      for (const m of node.members) {
        if (ts.isIndexSignatureDeclaration(m)) analyse(m.type, acc, seen);
        else acc.inline = true;
      }
      return acc;
    case ts.SyntaxKind.TypeReference: {
      for (const arg of node.typeArguments ?? []) analyse(arg, acc, seen);
      const sym = resolveSymbol(checker.getSymbolAtLocation(node.typeName));
      for (const decl of sym?.declarations ?? []) {
        if (ts.isInterfaceDeclaration(decl)) {
          // generic wrappers (ApiList<T>, Array<T>) stand for their argument
          if (!decl.typeParameters) acc.refs.add(interfaceId(decl));
        } else if (ts.isTypeAliasDeclaration(decl) && !seen.has(decl)) {
          seen.add(decl);
          analyse(decl.type, acc, seen);
          seen.delete(decl);
        }
      }
      return acc;
    }
    default:
      return acc;
  }
}

const interfaces = {};
function visit(node) {
  if (ts.isInterfaceDeclaration(node) && !node.typeParameters) {
    const id = interfaceId(node);
    if (interfaces[id]) return;
    const sym = checker.getSymbolAtLocation(node.name);
    const type = checker.getDeclaredTypeOfSymbol(sym);
    const fields = {};
    let object = null;
    for (const prop of checker.getPropertiesOfType(type)) {
      const decl = (prop.declarations ?? []).find(ts.isPropertySignature);
      if (!decl) continue;
      const acc = analyse(decl.type, { nullable: false, refs: new Set(), inline: false }, new Set());
      const field = { optional: Boolean(decl.questionToken), nullable: acc.nullable };
      if (acc.refs.size) field.refs = [...acc.refs].sort();
      if (acc.inline) field.inline = true;
      fields[prop.name] = field;
      if (
        prop.name === 'object' &&
        decl.type &&
        ts.isLiteralTypeNode(decl.type) &&
        ts.isStringLiteral(decl.type.literal)
      ) {
        object = decl.type.literal.text;
      }
    }
    interfaces[id] = object === null ? { fields } : { object, fields };
  }
  ts.forEachChild(node, visit);
}

for (const sf of program.getSourceFiles()) {
  if (!sf.fileName.startsWith(typesDir + path.sep)) continue;
  visit(sf);
}

const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'));
const apiVersionJs = fs.readFileSync(path.join(typesDir, 'apiVersion.js'), 'utf8');
const apiVersion = /ApiVersion\s*=\s*'([^']+)'/.exec(apiVersionJs)?.[1] ?? null;

const sorted = Object.fromEntries(Object.entries(interfaces).sort(([a], [b]) => (a < b ? -1 : 1)));
process.stdout.write(
  JSON.stringify({
    npm_version: pkg.version,
    api_version: apiVersion,
    typescript_version: ts.version,
    interfaces: sorted,
  }) + '\n',
);
