//! The symbols a patch needs from the objects it patches, which every
//! producer that emits ELF livepatch relocations (klp-build, kpatch-build,
//! a hand-made `.klp.rela` section) leaves for the kernel to resolve at
//! load: `.klp.sym.OBJNAME.NAME,SYMPOS` symbols with st_shndx
//! SHN_LIVEPATCH, used by `.klp.rela.OBJNAME.SECTION` sections
//! (Documentation/livepatch/module-elf-format.rst). One that the kernel
//! cannot find fails the load.
use std::collections::HashSet;

use object::read::elf::Sym;
use object::{Object, ObjectSymbol};

use super::{Failure, Reference, elf::NAME_MAX};
use crate::model::VMLINUX;

const SHN_LIVEPATCH: u16 = 0xff20;
const PREFIX: &str = ".klp.sym.";
/// klp-build (7.x objtool `klp diff`) keeps a patched function's original
/// relocation aimed at `.klp.tombstone.NAME`, a livepatch symbol that
/// `klp post-link` leaves unused: no reference, the kernel never reads it.
const TOMBSTONE: &str = ".klp.tombstone.";

pub fn read(file: &object::read::File) -> Result<Vec<Reference>, Failure> {
    let object::read::File::Elf64(elf) = file else {
        return Ok(Vec::new());
    };
    let mut references = Vec::new();
    // A file may repeat a symbol; a hostile one, millions of times.
    let mut seen = HashSet::new();
    for symbol in elf.symbols() {
        if symbol.elf_symbol().st_shndx(elf.endian()) != SHN_LIVEPATCH {
            continue;
        }
        let name = symbol
            .name()
            .map_err(|e| Failure::Corrupt(format!("a livepatch symbol's name: {e}")))?;
        if name.starts_with(TOMBSTONE) {
            continue;
        }
        let reference = parse(name).ok_or_else(|| {
            Failure::Layout(format!(
                "livepatch symbol {:?} is not .klp.sym.OBJECT.NAME,POSITION",
                name.chars().take(NAME_MAX).collect::<String>()
            ))
        })?;
        if seen.insert(reference.clone()) {
            references.push(reference);
        }
    }
    Ok(references)
}

/// `.klp.sym.OBJNAME.NAME,SYMPOS`: object names have no dot, symbol names
/// may (`foo.constprop.0`), positions have no comma. Kernel symbol and
/// module names are printable ASCII: anything else (a terminal escape in a
/// crafted file) is no reference, and never reaches a report.
fn parse(symbol: &str) -> Option<Reference> {
    let (object, rest) = symbol.strip_prefix(PREFIX)?.split_once('.')?;
    let (name, sympos) = rest.rsplit_once(',')?;
    let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !printable(object) || !printable(name) || name.len() >= NAME_MAX {
        return None;
    }
    Some(Reference {
        object: (object != VMLINUX).then(|| object.to_owned()),
        name: name.to_owned(),
        sympos: sympos.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_dots_keep_them_and_the_position_is_last() {
        assert_eq!(
            parse(".klp.sym.vmlinux.saved_command_line,0"),
            Some(Reference {
                object: None,
                name: "saved_command_line".into(),
                sympos: 0
            })
        );
        assert_eq!(
            parse(".klp.sym.klp_test_target.park.constprop.0,2"),
            Some(Reference {
                object: Some("klp_test_target".into()),
                name: "park.constprop.0".into(),
                sympos: 2
            })
        );
        for bad in [
            ".klp.sym.vmlinux",
            ".klp.sym.vmlinux.name",
            ".klp.sym.vmlinux.name,x",
            ".klp.sym..name,0",
            ".klp.sym.vmlinux.,0",
            "klp.sym.vmlinux.name,0",
            ".klp.sym.vmlinux.na\x1b[2Jme,0",
            ".klp.sym.vmlinux.na me,0",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
