// Signing in, as every page of monit's does: put in place of /*SIGN_IN*/ when the page is served.

// Trade the token for the session cookie (HttpOnly: no script reads it back); false, and the form says why, if refused.
async function session(token) {
  const answer = await fetch(CONFIG.session, {
    method: "POST", credentials: "same-origin", headers: {"Authorization": "Bearer " + token},
  });
  if (answer.ok) return true;
  const why = (await answer.json().catch(() => ({}))).error || answer.statusText;
  signIn("Not accepted: " + why);
  return false;
}

function signIn(why) {
  $("why").textContent = why || "";
  $("sign-in").hidden = false;
  $("token").focus();
}

// Start with the token from the form, or from the fragment (#token=…), which never reaches a server or its logs:
// take it, then drop it from the address bar. Without one, otherwise().
function signInWith(start, otherwise) {
  $("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    start($("token").value.trim());
    $("token").value = "";
  });
  const fragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fragment) {
    history.replaceState(null, "", location.pathname + location.search);
    start(fragment);
  } else {
    otherwise();
  }
}
