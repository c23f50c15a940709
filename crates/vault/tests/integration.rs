//! The vault against a real nats-server.

use testkit::TestNats;
use vault::Vault;

#[tokio::test]
async fn sealed_data_opens_with_its_key_and_never_again_once_destroyed() {
    let nats = TestNats::start().await;
    let js = async_nats::jetstream::new(nats.client().await);
    let vault = Vault::open(js.clone(), 1).await.unwrap();
    let sealed = vault.seal("hh-1", "Aïcha Benali, 06 12 34 56 78".as_bytes()).await.unwrap();
    assert!(!sealed.ciphertext.contains("Benali"));
    let other = vault.seal("hh-2", b"someone else").await.unwrap();
    assert_eq!(
        vault.unseal("hh-1", &sealed).await.unwrap().as_deref(),
        Some("Aïcha Benali, 06 12 34 56 78".as_bytes())
    );
    assert!(vault.unseal("hh-2", &sealed).await.is_err(), "another owner's key does not open it");

    // Reopening the vault (another process) finds the same key.
    let again = Vault::open(js.clone(), 1).await.unwrap();
    assert!(again.unseal("hh-1", &sealed).await.unwrap().is_some());

    again.destroy("hh-1").await.unwrap();
    assert_eq!(vault.unseal("hh-1", &sealed).await.unwrap(), None);
    assert!(vault.unseal("hh-2", &other).await.unwrap().is_some(), "other owners keep theirs");
    // A new key for the same owner does not open the old data either.
    vault.seal("hh-1", b"new").await.unwrap();
    assert!(vault.unseal("hh-1", &sealed).await.is_err());
}

#[tokio::test]
async fn identities_are_matched_by_keyed_hash_and_forgotten_on_erasure() {
    let nats = TestNats::start().await;
    let js = async_nats::jetstream::new(nats.client().await);
    let vault = Vault::open(js, 1).await.unwrap();
    assert_eq!(vault.index_identity("hh-a", "Benali Aïcha 1987-03-02").await.unwrap(), Vec::<String>::new());
    assert_eq!(vault.index_identity("hh-b", "  BENALI aïcha 1987-03-02 ").await.unwrap(), vec!["hh-a".to_owned()]);
    assert_eq!(vault.index_identity("hh-c", "Benali Aïcha 1990-01-01").await.unwrap(), Vec::<String>::new());
    assert_eq!(vault.others_with_identity_of("hh-a").await.unwrap(), vec!["hh-b".to_owned()]);
    let hash = vault.identity_hash("benali aicha").await.unwrap();
    assert_eq!(hash.len(), 64);
    assert!(!hash.contains("benali"));
    vault.destroy("hh-b").await.unwrap();
    assert_eq!(vault.others_with_identity_of("hh-a").await.unwrap(), Vec::<String>::new());
    // A changed identity replaces the old entry.
    vault.index_identity("hh-c", "Benali Aïcha 1987-03-02").await.unwrap();
    assert_eq!(vault.others_with_identity_of("hh-a").await.unwrap(), vec!["hh-c".to_owned()]);
}
