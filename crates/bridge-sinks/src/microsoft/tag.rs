//! The extended properties that tag our items on Microsoft targets
//! (`sinks-api.md` B.7; Graph `singleValueExtendedProperties`, `graph.md`).
//!
//! Both live in the MAPI `PublicStrings` property set, named, of type
//! String. One holds the source key (`EventKey` as text), so an item written
//! before a crash can be found and adopted; the other the content hash that
//! was applied, so drift repair can tell a user's edit from our own write.

/// The GUID of MAPI's `PublicStrings` named-property set
/// (`DistinguishedPropertySetId="PublicStrings"` in EWS).
pub const PUBLIC_STRINGS: &str = "00020329-0000-0000-C000-000000000046";

/// The property holding the source key (`<uid>_<original_time>`).
pub const KEY_PROPERTY: &str = "FeishuBridgeKey";

/// The property holding the applied content hash.
pub const HASH_PROPERTY: &str = "FeishuBridgeHash";

/// Graph's id of a single-value extended property of ours:
/// `String {00020329-0000-0000-C000-000000000046} Name FeishuBridgeKey`.
pub fn graph_property_id(name: &str) -> String {
    format!("String {{{PUBLIC_STRINGS}}} Name {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_ids_name_the_public_strings_set() {
        assert_eq!(
            graph_property_id(KEY_PROPERTY),
            "String {00020329-0000-0000-C000-000000000046} Name FeishuBridgeKey"
        );
    }
}
