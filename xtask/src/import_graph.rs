//! The import graph of a crate's files, for `cargo xtask lint`: it fails on
//! a cycle, so that each layer only ever imports the ones below it (a file
//! never imports, through any chain, a file that imports it).
//!
//! A folder's mod.rs re-exports its files' items: an import of such an item
//! counts as an import of the file that defines it, and the re-exports
//! themselves are no imports. Test modules (`#[cfg(test)]`) do not count.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// A module's path from the crate root: `["probes", "loader"]`.
type Module = Vec<String>;

struct SourceFile {
    /// mod.rs, lib.rs or main.rs: `super` is its folder's parent.
    facade: bool,
    code: String,
}

/// Fails with every cycle found among the files under `src`.
pub fn check(src: &Path) -> Result<()> {
    let files = read_files(src)?;
    let graph: BTreeMap<&Module, BTreeSet<Module>> = files
        .iter()
        .map(|(module, file)| (module, imports(module, file, &files)))
        .collect();
    let cycles = cycles(&graph);
    if cycles.is_empty() {
        return Ok(());
    }
    let named: Vec<String> = cycles
        .iter()
        .map(|cycle| cycle.iter().map(display).collect::<Vec<_>>().join(" -> "))
        .collect();
    bail!("import cycles in {}: {}", src.display(), named.join("; "))
}

fn display(module: &Module) -> String {
    if module.is_empty() {
        "crate root".into()
    } else {
        module.join("::")
    }
}

fn read_files(src: &Path) -> Result<BTreeMap<Module, SourceFile>> {
    let mut files = BTreeMap::new();
    let mut folders = vec![PathBuf::from(src)];
    while let Some(folder) = folders.pop() {
        for entry in
            fs::read_dir(&folder).with_context(|| format!("reading {}", folder.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src)?.with_extension("");
            let mut module: Module = relative
                .iter()
                .map(|part| part.to_string_lossy().into_owned())
                .collect();
            let facade = matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            );
            if facade {
                module.pop();
            }
            let binary = relative == Path::new("main") && src.join("lib.rs").exists();
            if binary || module.first().is_some_and(|first| first == "bin") {
                // Binaries beside a library are crates of their own.
                continue;
            }
            let text = fs::read_to_string(&path)?;
            let code = without_tests(&strip_comments_and_strings(&text));
            files.insert(module, SourceFile { facade, code });
        }
    }
    Ok(files)
}

/// The files this one imports, re-exports resolved to their origin.
fn imports(
    module: &Module,
    file: &SourceFile,
    files: &BTreeMap<Module, SourceFile>,
) -> BTreeSet<Module> {
    let children: BTreeSet<String> = files
        .keys()
        .filter(|other| other.len() == module.len() + 1 && other.starts_with(module))
        .filter_map(|child| child.last().cloned())
        .collect();
    let mut found = BTreeSet::new();
    for path in paths(&file.code, file.facade, &children) {
        if let Some(target) = resolve(&path, module, files)
            && target != *module
        {
            found.insert(target);
        }
    }
    found
}

/// Every `crate::`, `super::` and `self::` path in the code, use trees
/// expanded; in a facade also the paths into its own files
/// (`children`). A facade's `pub use` lines are re-exports, not imports.
fn paths(code: &str, facade: bool, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest_of_code = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = find_word(rest, "use") {
        let before = &rest[..at];
        let Some(end) = rest[at..].find(';') else {
            break;
        };
        let public = before.trim_end().ends_with("pub") || before.trim_end().ends_with(')');
        if !(facade && public) {
            expand(&rest[at + 3..at + end], Vec::new(), &mut paths);
        }
        rest_of_code.push_str(before);
        rest = &rest[at + end..];
    }
    rest_of_code.push_str(rest);
    let mut starts: Vec<&str> = vec!["crate", "super", "self"];
    if facade {
        starts.extend(children.iter().map(String::as_str));
    }
    for start in &starts {
        let mut from = 0;
        while let Some(at) = find_word(&rest_of_code[from..], start) {
            let at = from + at;
            from = at + start.len();
            if !rest_of_code[from..].starts_with("::") {
                continue;
            }
            let end = rest_of_code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(rest_of_code.len(), |end| at + end);
            paths.push(
                rest_of_code[at..end]
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
            );
        }
    }
    for path in &mut paths {
        if facade && path.first().is_some_and(|first| children.contains(first)) {
            path.insert(0, "self".to_owned());
        }
    }
    paths.retain(|path| {
        matches!(
            path.first().map(String::as_str),
            Some("crate" | "super" | "self")
        )
    });
    paths
}

/// Where `word` stands alone in `text` (not inside another name, nor
/// after `::`).
fn find_word(text: &str, word: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(at) = text[from..].find(word) {
        let at = from + at;
        let end = at + word.len();
        let starts = at == 0
            || !(bytes[at - 1].is_ascii_alphanumeric() || matches!(bytes[at - 1], b'_' | b':'));
        let ends = end == text.len() || !(bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_');
        if starts && ends {
            return Some(at);
        }
        from = end;
    }
    None
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    match tree.find('{') {
        // After a trailing comma.
        None if tree.is_empty() => {}
        None => {
            let item = tree.split(" as ").next().unwrap_or(tree);
            let mut path = prefix;
            path.extend(
                item.split("::")
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && !matches!(*s, "*" | "self"))
                    .map(str::to_owned),
            );
            out.push(path);
        }
        Some(open) => {
            let mut path = prefix;
            path.extend(
                tree[..open]
                    .split("::")
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let mut depth = 0;
            let mut item_start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(&inner[item_start..i], path.clone(), out);
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(&inner[item_start..], path, out);
        }
    }
}

/// The file a path leads to: the deepest module it names, and where that
/// is a folder's mod.rs re-exporting the next name, the file defining it.
fn resolve(
    path: &[String],
    module: &Module,
    files: &BTreeMap<Module, SourceFile>,
) -> Option<Module> {
    let mut current: Module = match path.first()?.as_str() {
        "crate" => Vec::new(),
        "self" => module.clone(),
        _ => module.clone(),
    };
    // Each `super`, from a file or from a folder's mod.rs alike, is one
    // step up from the module.
    let supers = path.iter().take_while(|s| *s == "super").count();
    for _ in 0..supers {
        current.pop();
    }
    let rest = &path[supers.max(1)..];
    for segment in rest {
        let mut next = current.clone();
        next.push(segment.clone());
        if files.contains_key(&next) {
            current = next;
            continue;
        }
        if let Some(origin) = reexported_from(&current, segment, files) {
            current = origin;
        }
        break;
    }
    files.contains_key(&current).then_some(current)
}

/// The child file of facade `folder` whose item `name` the facade
/// re-exports.
fn reexported_from(
    folder: &Module,
    name: &str,
    files: &BTreeMap<Module, SourceFile>,
) -> Option<Module> {
    let facade = files.get(folder).filter(|f| f.facade)?;
    let mut reexports = Vec::new();
    let mut rest = facade.code.as_str();
    while let Some(at) = find_word(rest, "use") {
        let public = rest[..at].trim_end();
        let end = rest[at..].find(';')?;
        if public.ends_with("pub")
            || public.ends_with("pub(crate)")
            || public.ends_with("pub(super)")
        {
            expand(&rest[at + 3..at + end], Vec::new(), &mut reexports);
        }
        rest = &rest[at + end..];
    }
    let child_of = |path: &[String]| {
        let mut child = folder.clone();
        child.push(path.first()?.clone());
        files.contains_key(&child).then_some(child)
    };
    // Named re-exports first, then globs (`pub use child::*`).
    reexports
        .iter()
        .find(|path| path.len() > 1 && path.last().is_some_and(|last| last == name))
        .and_then(|path| child_of(path))
        .or_else(|| {
            reexports
                .iter()
                .filter(|path| path.len() == 1)
                .filter_map(|path| child_of(path))
                .find(|child| defines(&files[child].code, name))
        })
}

fn defines(code: &str, name: &str) -> bool {
    [
        "struct", "enum", "fn", "trait", "type", "const", "static", "mod",
    ]
    .iter()
    .any(|kind| {
        code.match_indices(&format!("{kind} {name}"))
            .any(|(at, found)| {
                code[at + found.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
            })
    })
}

/// Comments and the contents of string and char literals, blanked: a
/// `use ` in a doc comment is no import.
fn strip_comments_and_strings(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' || (c == 'r' && (next == Some('"') || next == Some('#'))) {
            // Raw strings end at `"` followed by as many #s as they opened with.
            let raw = c == 'r';
            let mut hashes = 0;
            if raw {
                i += 1;
                while chars.get(i) == Some(&'#') {
                    hashes += 1;
                    i += 1;
                }
                if chars.get(i) != Some(&'"') {
                    out.push('r');
                    continue;
                }
            }
            i += 1;
            while i < chars.len() {
                if !raw && chars[i] == '\\' {
                    i += 2;
                    continue;
                }
                if chars[i] == '"' && (0..hashes).all(|k| chars.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else if c == '\'' && next == Some('\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The code without `#[cfg(test)]` items: tests may reach anywhere.
fn without_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        // The item ends at its `;` or at the brace closing its body.
        let mut depth = 0;
        let mut end = item.len();
        for (i, c) in item.char_indices() {
            match c {
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// The graph's cycles: its strongly connected components of more than
/// one file (Tarjan).
fn cycles(graph: &BTreeMap<&Module, BTreeSet<Module>>) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<&'a Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on_stack: BTreeSet<Module>,
        found: Vec<Vec<Module>>,
    }
    impl Walk<'_> {
        fn visit(&mut self, node: &Module) {
            let n = self.index.len();
            self.index.insert(node.clone(), n);
            self.low.insert(node.clone(), n);
            self.stack.push(node.clone());
            self.on_stack.insert(node.clone());
            for next in self.graph.get(node).into_iter().flatten() {
                if !self.index.contains_key(next) {
                    self.visit(next);
                    let low = self.low[node].min(self.low[next]);
                    self.low.insert(node.clone(), low);
                } else if self.on_stack.contains(next) {
                    let low = self.low[node].min(self.index[next]);
                    self.low.insert(node.clone(), low);
                }
            }
            if self.low[node] == self.index[node] {
                let mut component = Vec::new();
                while let Some(member) = self.stack.pop() {
                    self.on_stack.remove(&member);
                    let done = member == *node;
                    component.push(member);
                    if done {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.reverse();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for node in graph.keys() {
        if !walk.index.contains_key(*node) {
            walk.visit(node);
        }
    }
    walk.found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(sources: &[(&str, bool, &str)]) -> BTreeMap<Module, SourceFile> {
        sources
            .iter()
            .map(|(module, facade, code)| {
                let module = module
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                let code = without_tests(&strip_comments_and_strings(code));
                (
                    module,
                    SourceFile {
                        facade: *facade,
                        code,
                    },
                )
            })
            .collect()
    }

    fn graph_cycles(files: &BTreeMap<Module, SourceFile>) -> Vec<Vec<Module>> {
        let graph = files
            .iter()
            .map(|(module, file)| (module, imports(module, file, files)))
            .collect();
        cycles(&graph)
    }

    #[test]
    fn a_file_importing_a_file_that_imports_it_is_a_cycle() {
        let files = files(&[
            ("", true, "mod probes;"),
            (
                "probes",
                true,
                "mod loader; mod iterator; pub use loader::load;",
            ),
            (
                "probes::loader",
                false,
                "use super::iterator::Iterator;\nfn load() {}",
            ),
            (
                "probes::iterator",
                false,
                "use super::{loader::{bare, other}};\npub struct Iterator;",
            ),
        ]);
        assert_eq!(graph_cycles(&files).len(), 1);
    }

    #[test]
    fn re_exports_tests_and_comments_make_no_cycle() {
        let files = files(&[
            ("", true, "mod probes;"),
            (
                "probes",
                true,
                "mod loader; mod iterator; pub use loader::load; pub use iterator::*;",
            ),
            (
                "probes::loader",
                false,
                "use super::Iterator;\npub fn load() {}\n#[cfg(test)]\nmod tests { use crate::probes::load; }",
            ),
            (
                "probes::iterator",
                false,
                "// use super::load;\npub struct Iterator; const S: &str = \"use super::load;\";",
            ),
        ]);
        assert!(graph_cycles(&files).is_empty());
        let loader = vec!["probes".to_owned(), "loader".to_owned()];
        let iterator = vec!["probes".to_owned(), "iterator".to_owned()];
        assert_eq!(
            imports(&loader, &files[&loader], &files),
            BTreeSet::from([iterator])
        );
    }
}
