//! Resolves docker-style `--user` specs against a container's /etc/passwd and /etc/group.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, not including `gid`.
    pub groups: Vec<u32>,
    pub home: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum UserError {
    UnknownUser(String),
    UnknownGroup(String),
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::UnknownUser(u) => write!(
                f,
                "unable to find user {u}: no matching entries in the image's /etc/passwd"
            ),
            UserError::UnknownGroup(g) => write!(
                f,
                "unable to find group {g}: no matching entries in the image's /etc/group"
            ),
        }
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn group_entries(group: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    group.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 || line.starts_with('#') {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
        })
    })
}

/// Resolves `spec` ("", "name", "uid", "name:group", "uid:gid", ...) the way docker does:
/// a numeric user that is not in passwd is still valid (gid 0, home "/"), a name must exist.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Identity, UserError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let entry = match user.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|e| e.uid == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|e| e.name == user)
                .ok_or_else(|| UserError::UnknownUser(user.to_string()))?,
        ),
    };
    let (uid, mut gid, home, name) = match (&entry, user.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, e.home.to_string(), Some(e.name)),
        (None, Ok(uid)) => (uid, 0, "/".to_string(), None),
        (None, Err(_)) => unreachable!("a named user was found above"),
    };
    if let Some(g) = grp.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => group_entries(group)
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| UserError::UnknownGroup(g.to_string()))?,
        };
    }
    let mut groups = Vec::new();
    if grp.is_none() {
        if let Some(name) = name {
            for e in group_entries(group) {
                if e.members.contains(&name) && e.gid != gid && !groups.contains(&e.gid) {
                    groups.push(e.gid);
                }
            }
        }
    }
    let home = if home.is_empty() { "/".into() } else { home };
    Ok(Identity {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        daemon:x:1:1:daemon:/usr/sbin:/bin/false\n\
        # a comment\n\
        broken line\n\
        www:x:33:33:www:/var/www:/bin/false\n\
        nohome:x:1000:1000::::\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,www\nwww:x:33:\nstaff:x:50:www\n";

    #[test]
    fn empty_spec_is_root_with_its_groups() {
        let id = resolve("", PASSWD, GROUP).unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_str()), (0, 0, "/root"));
        assert_eq!(id.groups, vec![10]);
    }

    #[test]
    fn name_resolves_uid_gid_home_and_supplementary_groups() {
        let id = resolve("www", PASSWD, GROUP).unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_str()), (33, 33, "/var/www"));
        assert_eq!(id.groups, vec![10, 50]);
    }

    #[test]
    fn numeric_user_not_in_passwd_gets_gid_zero() {
        let id = resolve("4242", PASSWD, GROUP).unwrap();
        assert_eq!((id.uid, id.gid, id.home.as_str()), (4242, 0, "/"));
        assert!(id.groups.is_empty());
    }

    #[test]
    fn explicit_group_by_name_and_number() {
        assert_eq!(resolve("www:staff", PASSWD, GROUP).unwrap().gid, 50);
        let id = resolve("1:77", PASSWD, GROUP).unwrap();
        assert_eq!((id.uid, id.gid), (1, 77));
        assert!(
            id.groups.is_empty(),
            "explicit group replaces supplementary groups"
        );
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve("nobody", PASSWD, GROUP),
            Err(UserError::UnknownUser("nobody".into()))
        );
        assert_eq!(
            resolve("www:nogroup", PASSWD, GROUP),
            Err(UserError::UnknownGroup("nogroup".into()))
        );
    }

    #[test]
    fn empty_home_falls_back_to_root_dir() {
        assert_eq!(resolve("nohome", PASSWD, GROUP).unwrap().home, "/");
    }
}
