import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, posix } from 'node:path';

/**
 * What the documentation names, checked against the tree: every file it points at exists, every
 * function, class and type it names is declared somewhere in the code, every setting it names is
 * read by the code, every `npm run` script and `candlewick` command exists, every link reaches a
 * file and a heading. Run by test/docs.test.ts (in `npm test`), so the docs cannot drift from the
 * code unnoticed.
 */

export interface DocProblem {
  doc: string;
  line: number;
  what: string;
}

/** Names the docs use that belong to other software (Redis, PostgreSQL, Node, libraries), not to candlewick's code. */
const FOREIGN = new Set([
  // ioredis / BullMQ / Node / libraries
  'defineCommand',
  'setpriority',
  'lightweight-charts',
  'createChart',
  // databases named for comparison
  'ReplacingMergeTree',
  'create_hypertable',
  // tardis-dev
  'compute',
]);

function gitFiles(root: string): string[] {
  return execFileSync('git', ['ls-files', '--cached', '--others', '--exclude-standard'], { cwd: root, encoding: 'utf8' })
    .split('\n')
    .filter((f) => f && existsSync(join(root, f)));
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes. */
export function slug(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/`/g, '')
    .replace(/[^\p{L}\p{N}\s_-]/gu, '')
    .replace(/\s/g, '-');
}

function anchors(text: string): Set<string> {
  const out = new Set<string>();
  const seen = new Map<string, number>();
  for (const m of text.matchAll(/^#{1,6}\s+(.+)$/gm)) {
    const base = slug(m[1]!);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

export function checkDocs(root: string): DocProblem[] {
  const files = gitFiles(root);
  const docs = files.filter((f) => f.endsWith('.md') && !f.startsWith('node_modules/'));
  const code = files.filter((f) => /\.(ts|cjs|mjs|js|lua|html)$/.test(f) && !f.endsWith('.d.ts'));
  const codeText = code.map((f) => readFileSync(join(root, f), 'utf8')).join('\n');
  const otherText = files
    .filter((f) => /(^|\/)(Dockerfile|run|[^/]*\.ya?ml|\.env\.example|package\.json)$/.test(f))
    .map((f) => readFileSync(join(root, f), 'utf8'))
    .join('\n');
  const words = new Set(codeText.match(/[A-Za-z_$][\w$]*/g) ?? []);
  const allWords = new Set([...words, ...(otherText.match(/[A-Za-z_$][\w$]*/g) ?? [])]);
  // a name is declared if it follows one of these
  const declared = new Set<string>();
  for (const m of codeText.matchAll(
    /\b(?:function\*?|class|interface|type|enum|const|let|var|get|set|async|static|readonly|private|public|protected)\s+([A-Za-z_$][\w$]*)/g,
  ))
    declared.add(m[1]!);
  for (const m of codeText.matchAll(
    /^\s*(?:(?:private|public|protected|static|async|readonly|override)\s+)*([A-Za-z_$][\w$]*)\s*(?:<[^>]*>)?\(/gm,
  ))
    declared.add(m[1]!);
  for (const m of codeText.matchAll(/^\s*(?:readonly\s+)?([A-Za-z_$][\w$]*)\??\s*:/gm)) declared.add(m[1]!); // fields, object keys
  for (const m of codeText.matchAll(/export\s*\{([^}]*)\}/g))
    for (const n of m[1]!.split(','))
      declared.add(
        n
          .trim()
          .split(/\s+as\s+/)
          .pop()!,
      );
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const cliText =
    readFileSync(join(root, 'packages/cli/src/cli.ts'), 'utf8') + readFileSync(join(root, 'packages/cli/src/usage.ts'), 'utf8');
  // the commands: the cases of cli.ts and the roles of usage.ts (ROLE_HELP's keys)
  const commands = new Set([...cliText.matchAll(/case '([a-z-]+)'|^ {2}'?([a-z][a-z-]*)'?: \{/gm)].map((m) => m[1] ?? m[2]!));
  const byBase = new Map<string, string[]>();
  for (const f of files) byBase.set(posix.basename(f), [...(byBase.get(posix.basename(f)) ?? []), f]);
  const texts = new Map(docs.map((d) => [d, readFileSync(join(root, d), 'utf8')]));

  const problems: DocProblem[] = [];
  // every package has a README naming each of its source files
  for (const pkgDir of new Set(files.filter((f) => /^packages\/[^/]+\/src\//.test(f)).map((f) => f.split('/').slice(0, 2).join('/')))) {
    const readme = `${pkgDir}/README.md`;
    if (!existsSync(join(root, readme))) {
      problems.push({ doc: readme, line: 0, what: `${pkgDir} has no README` });
      continue;
    }
    const text = readFileSync(join(root, readme), 'utf8');
    for (const f of files.filter((f) => f.startsWith(`${pkgDir}/src/`) && /\.ts$/.test(f) && !/(\.test|\.d|\/index)\.ts$/.test(f)))
      if (!text.includes(`\`${f.slice(pkgDir.length + 1)}\``))
        problems.push({ doc: readme, line: 0, what: `${f.slice(pkgDir.length + 1)} is not described` });
  }
  // paths named in the code's comments and messages (script headers, "extend this file")
  // (not the tests': they name files they create)
  for (const f of code.filter((c) => !c.startsWith('test/'))) {
    const text = readFileSync(join(root, f), 'utf8');
    for (const m of text.matchAll(/\b(?:packages|test|bench)\/[\w-]+(?:\/[\w.-]+)*\.(?:ts|lua|cjs|mjs|json)\b/g))
      if (!existsSync(join(root, m[0])) && !existsSync(join(root, m[0].replace(/\.js$/, '.ts'))))
        problems.push({ doc: f, line: text.slice(0, m.index).split('\n').length, what: `${m[0]}: no such file` });
  }
  for (const [doc, text] of texts) {
    const dir = dirname(doc);
    const say = (index: number, what: string) => problems.push({ doc, line: text.slice(0, index).split('\n').length, what });
    // fenced blocks: only their npm scripts and candlewick commands are checked
    const fences: [number, number, boolean][] = [];
    for (const m of text.matchAll(/^```([^\n]*)\n[\s\S]*?^```/gm))
      fences.push([m.index!, m.index! + m[0].length, /^(sh|bash|shell|console)$/.test(m[1]!.trim())]);
    const inFence = (i: number) => fences.some(([a, b]) => i >= a && i < b);
    const inShell = (i: number) => fences.some(([a, b, sh]) => sh && i >= a && i < b);

    for (const m of text.matchAll(/npm run ([\w:-]+)/g))
      if (!(m[1]! in pkg.scripts)) say(m.index!, `\`npm run ${m[1]}\`: no such script in package.json`);
    // a command in code: `candlewick X …` inline, or a line of a fenced block
    for (const m of text.matchAll(
      /(?:`|^\s*(?:\$ )?(?:[A-Z_]+=\S+ )*(?:npx |node packages\/cli\/dist\/cli\.js |))candlewick ([a-z][a-z-]*)/gm,
    ))
      if ((m[0].startsWith('`') || inShell(m.index!)) && !commands.has(m[1]!)) say(m.index!, `\`candlewick ${m[1]}\`: no such command`);

    // links to files of the repository and their headings
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1]!;
      if (/^[a-z]+:/.test(target)) continue;
      const [path, anchor] = target.split('#') as [string, string | undefined];
      const file = path ? normalize(join(dir, path)) : doc;
      if (!existsSync(join(root, file))) {
        say(m.index!, `link to ${target}: ${file} does not exist`);
        continue;
      }
      if (anchor && file.endsWith('.md')) {
        const t = texts.get(file) ?? readFileSync(join(root, file), 'utf8');
        if (!anchors(t).has(anchor)) say(m.index!, `link to ${target}: no heading #${anchor} in ${file}`);
      }
    }

    for (const m of text.matchAll(/`([^`\n]+)`/g)) {
      if (inFence(m.index!)) continue;
      const span = m[1]!.trim();
      // a file of the repository
      const pathLike =
        /^(\.\/)?[\w.@/-]+\.(ts|lua|cjs|mjs|sh|ya?ml|md|png|json\.gz|zip|html)$/.test(span) ||
        /^(packages|test|bench|tapes|docs|deploy|\.ci)\/[\w./-]+$/.test(span);
      if (
        pathLike &&
        !span.includes('*') &&
        !/[A-Z]{3,}/.test(
          span
            .replace(/\.\w+$/, '')
            .split('/')
            .pop()!
            .replace(/^[A-Z_]+$/, 'x'),
        )
      ) {
        const p = span.replace(/^\.\//, '');
        const candidates = [normalize(join(dir, p)), normalize(p)];
        // a path whose first folder is not the repository's (`Data/equity/…` inside a dataset) is another tree's
        if (p.includes('/') && !['src', 'lua', ...new Set(files.map((f) => f.split('/')[0]!))].includes(p.split('/')[0]!)) continue;
        const rooted = p.includes('/');
        const found =
          candidates.some((c) => existsSync(join(root, c))) ||
          (!rooted && byBase.has(p)) ||
          (p.includes('/') && files.some((f) => f.endsWith(`/${p}`)));
        if (!found) say(m.index!, `\`${span}\`: no such file`);
        continue;
      }
      // a setting: NAME or NAME=value (names with an underscore; others are also Redis commands, signals, codes)
      const setting = /^([A-Z][A-Z0-9]*_[A-Z0-9_]+)(?:\(_FILE\))?(?:=\S*)?$/.exec(span);
      if (setting) {
        const name = setting[1]!.replace(/_FILE$/, '');
        if (!allWords.has(name) && !allWords.has(setting[1]!)) say(m.index!, `\`${span}\`: no code reads ${setting[1]}`);
        continue;
      }
      // a function, method, class or type of the code: name(…), A.b(…), camelCase or PascalCase words
      const call = /^((?:[A-Za-z_$][\w$]*\.)*[A-Za-z_$][\w$]*)(?:<[^>]*>)?\(.*\)$/.exec(span);
      const ident = /^(?:[a-z]+[A-Z][\w$]*|[A-Z][a-z0-9]+[A-Z][\w$]*)$/.test(span) ? span : undefined;
      const names = call ? call[1]!.split('.') : ident ? [ident] : [];
      for (const name of names) {
        if (FOREIGN.has(name) || FOREIGN.has(span)) continue;
        if (!words.has(name)) say(m.index!, `\`${span}\`: ${name} is not in the code`);
        else if (name === names[names.length - 1] && /^[A-Za-z]/.test(name) && !declared.has(name) && call)
          say(m.index!, `\`${span}\`: ${name} is not declared in the code`);
      }
    }
  }
  return problems;
}
