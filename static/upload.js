// The upload form refuses a picture over the server's limit before sending it: a phone's
// photo on a slow link would otherwise upload for a minute only to be refused.
(function () {
  "use strict";
  var input = document.querySelector("input[name=image]");
  input.addEventListener("change", function () {
    var file = input.files[0];
    var tooLarge = file && file.size > Number(input.dataset.maxBytes);
    input.setCustomValidity(tooLarge ? input.dataset.tooLarge : "");
    if (tooLarge) { input.reportValidity(); }
  });
})();
