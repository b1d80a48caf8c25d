/** Small DOM helpers shared by the tab's views. Strings always become text nodes, never HTML. */

/** Creates an element with properties and children (strings become text nodes). */
export function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

export function labelled(text, control, title) {
  return el("label", { className: "control", title }, [el("span", { textContent: text }), control]);
}

/** Replaces a select's options ([value, text] pairs), keeping `keep` selected when it is still there. */
export function setOptions(select, values, keep) {
  const same =
    select.options.length === values.length &&
    values.every(([value, text], i) => select.options[i].value === value && select.options[i].textContent === text);
  if (!same) select.replaceChildren(...values.map(([value, text]) => el("option", { value, textContent: text })));
  if (values.some(([value]) => value === keep)) select.value = keep;
  select.disabled = values.length === 0;
}

/**
 * setOptions for tags, grouped as TensorBoard groups its cards: an <optgroup> per tag prefix (the part
 * before the first "/"), in the order the prefixes first appear; plain options when there is one group.
 */
export function setTagOptions(select, values, keep) {
  const prefix = ([value]) => (value.includes("/") ? value.slice(0, value.indexOf("/")) : value);
  const groups = new Map();
  for (const option of values) {
    if (!groups.has(prefix(option))) groups.set(prefix(option), []);
    groups.get(prefix(option)).push(option);
  }
  if (groups.size < 2) {
    setOptions(select, values, keep);
    return;
  }
  const ordered = [...groups.values()].flat();
  const same =
    select.querySelectorAll("optgroup").length === groups.size &&
    select.options.length === ordered.length &&
    ordered.every(([value, text], i) => select.options[i].value === value && select.options[i].textContent === text);
  if (!same) {
    select.replaceChildren(...[...groups].map(([label, options]) =>
      el("optgroup", { label }, options.map(([value, text]) => el("option", { value, textContent: text })))));
  }
  if (values.some(([value]) => value === keep)) select.value = keep;
  select.disabled = false;
}
